package apitypes

// Auth is the bearer tokens of the API, declared once for the server
// (which checks them) and the CLI (which sends them); the CLI tunes their
// meaning (config.Tuner).
type Auth struct {
	Token     string `envconfig:"ADMIN_TOKEN" desc:"bearer token for writes (and reads); admin refuses to start without one unless ADMIN_INSECURE"`
	ReadToken string `envconfig:"ADMIN_READ_TOKEN" desc:"bearer token for reads only (weights, status, stats, records, history); empty: reads need ADMIN_TOKEN"`
}
