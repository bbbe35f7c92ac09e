"""sealpod.policy"""
