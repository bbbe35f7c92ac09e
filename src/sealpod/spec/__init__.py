"""sealpod.spec"""
