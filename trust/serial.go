package trust

import "math/big"

// SerialHex renders a serial number the way meshca stores and prints it:
// lower-case hexadecimal without separators.
func SerialHex(n *big.Int) string { return n.Text(16) }
