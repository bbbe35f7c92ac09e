"""sealpod.tee"""
