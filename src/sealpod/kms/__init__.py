"""sealpod.kms"""
