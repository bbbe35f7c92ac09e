"""sealpod.evidence"""
