"""sealpod.volume"""
