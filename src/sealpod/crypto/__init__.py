"""sealpod.crypto"""
