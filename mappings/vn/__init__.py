"""Vietnamese identifier rules and code tables (data files in mappings/vn/data)."""
