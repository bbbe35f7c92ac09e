"""sealpod.build"""
