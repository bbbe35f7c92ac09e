"""sealpod.collateral"""
