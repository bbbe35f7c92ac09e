"""sealpod.verify"""
