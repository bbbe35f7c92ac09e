"""Tests of sealpod.build (a package so its module names cannot clash with other suites)."""
