package sqlite

// boolInt is a boolean as SQLite's 0/1 integer columns store it.
func boolInt(b bool) any {
	if b {
		return int64(1)
	}
	return int64(0)
}
