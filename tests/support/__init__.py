"""Helpers shared by the test suites: OCI layouts, registries, disk and filesystem readers,
tree comparison, and the table of programs the tests need. No tests here."""
