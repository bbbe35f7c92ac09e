"""Tests of sealpod.spec (a package so its module names cannot clash with other suites)."""
