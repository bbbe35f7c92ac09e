"""Tests of sealpod.runtime's pure parts (a package so module names cannot clash)."""
