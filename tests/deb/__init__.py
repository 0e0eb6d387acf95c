"""The Debian package: built, inspected, installed, run and purged (make test-deb)."""
