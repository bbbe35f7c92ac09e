"""sealpod.runtime"""
