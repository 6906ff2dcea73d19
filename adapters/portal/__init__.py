"""Clients for the two national channels behind one interface, and the portal emulator."""
