"""sealpod.testing"""
