package main

// checkpointConfig is `store.checkpoint:`: signed audit checkpoints, which
// anchor the audit chain outside the database (see package
// store/checkpoint). They are always on.
type checkpointConfig struct {
	// Interval is how often the chain head is read, and a checkpoint
	// signed if it moved. Default 1m.
	Interval duration `json:"interval,omitempty"`
	// KeyFile is the ECDSA signing key (PEM, mode 0600), created if missing.
	// Default DATA_DIR/audit-checkpoint-key.pem. It must not be readable by
	// whoever can write the database.
	KeyFile string `json:"keyFile,omitempty"`
	// Dir receives the checkpoints, latest.json and the public key
	// checkpoint-key.pub.pem. Default DATA_DIR/audit-checkpoints.
	Dir string `json:"dir,omitempty"`
	// Keep is how many checkpoint files are kept. Default 10080 (a week at
	// one a minute).
	Keep int `json:"keep,omitempty"`
}
