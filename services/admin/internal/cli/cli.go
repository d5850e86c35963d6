// Package cli is admin's command line: clients of the HTTP API (package
// api), usable wherever the API is reachable — inside the container that
// serves it too, since it is the same binary.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/apitypes"
	"github.com/connpipe/connpipe/shared/config"
	"github.com/connpipe/connpipe/shared/control"
)

// Usage is the command-line help. Its lists of routing modes and hash keys
// are the rows of control.Modes and control.HashKeys.
var Usage = strings.NewReplacer(
	"{modes}", strings.Join(control.ModeNames(), "|"),
	"{keys}", strings.Join(control.HashKeyNames(), "|"),
).Replace(usage)

const usage = `usage:
  admin [serve]                        run the HTTP API (the default)
  admin weights get                    print the routing table and its version
  admin weights set NAME=WEIGHT... [--expect-version N] [--wait DURATION]
                                       change weights (0..256, 0 drains); names not
                                       given keep theirs; --wait waits until every
                                       live consumer applied the change
  admin backends add NAME HOST:PORT|redis://HOST:PORT/DB|rediss://… [--weight N] [--credential C]
                 [--expect-version N] [--wait DURATION]
                                       add a Redis instance (weight 1 if not given);
                                       consumers use it without a restart; --credential
                                       names the login in each reader's REDIS_CREDENTIALS
                                       (a password in the address is refused)
  admin backends remove NAME [--expect-version N] [--wait DURATION]
                                       take an instance out of the table
  admin mode set {modes} [--key {keys}] [--sticky[=false]]
                 [--expect-version N] [--wait DURATION]
                                       routing mode: exact weighted split, or
                                       consistent hashing on a key; --sticky keeps
                                       a key where it first landed
  admin status                         table, consumers, backends, convergence
  admin records [--since 1m] [--until T] [--src IP] [--dst IP] [--key K] [--limit N] [--json] [--all] [--count]
                                       stored records, one per line, backend first;
                                       a count per backend on stderr; in hash mode a
                                       query naming the key (--key: a record's payload
                                       key) asks only its owner; --count prints how
                                       many each instance holds instead (no limit; a
                                       window with no filter reads only counters)
  admin history [--since D]            the control log's changes, oldest first: when,
                                       who, version, what (default: all admin holds)
  admin help                           this text

exit status: 0 ok; 1 refused or failed; 2 bad usage; 3 applied but not every
live consumer applied it within --wait
`

// WriteUsage prints the commands and the client's variables (from Env's
// tags).
func WriteUsage(w io.Writer) {
	fmt.Fprint(w, Usage)
	fmt.Fprintln(w, "\nenvironment of the commands (name, default, meaning):")
	config.WriteUsage(w, Env{})
}

// Exit codes.
const (
	ExitOK           = 0
	ExitFailed       = 1
	ExitUsage        = 2
	ExitNotConverged = 3
)

// Env is the CLI's configuration. Reads send ADMIN_READ_TOKEN, or
// ADMIN_TOKEN when it is empty (the write token is good for reads too);
// writes send ADMIN_TOKEN.
type Env struct {
	URL string `envconfig:"ADMIN_URL" default:"http://127.0.0.1:8080" desc:"where the CLI sends its requests"`
	apitypes.Auth
	// CAFile holds PEM certificates trusted for an https ADMIN_URL (admin
	// serving with TLS_CERT); empty trusts the system's roots.
	CAFile string `envconfig:"ADMIN_CA_FILE" desc:"PEM certificates trusted for an https ADMIN_URL (empty: the system's roots)"`
}

// Tune says what the CLI does with the API's tokens.
func (Env) Tune() []config.Var {
	return []config.Var{
		{Name: "ADMIN_TOKEN", Desc: "token for writes (weights set, backends, mode)"},
		{Name: "ADMIN_READ_TOKEN", Desc: "token for reads (empty: ADMIN_TOKEN)"},
	}
}

// loadCA reads ADMIN_CA_FILE.
func loadCA(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("ADMIN_CA_FILE=%s: %w", file, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("ADMIN_CA_FILE=%s: no PEM certificate in it", file)
	}
	return pool, nil
}

// usageError is bad input on the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// exitError carries an exit code other than ExitFailed.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }

// Run runs the command in args (without the program name), writing results
// to stdout and diagnostics to stderr, and returns the exit status.
func Run(ctx context.Context, env Env, args []string, stdout, stderr io.Writer) int {
	c := &client{base: strings.TrimRight(env.URL, "/"), token: strings.TrimSpace(env.Token),
		readToken: strings.TrimSpace(env.ReadToken), out: stdout, errw: stderr}
	if c.readToken == "" {
		c.readToken = c.token
	}
	if env.CAFile != "" {
		pool, err := loadCA(env.CAFile)
		if err != nil {
			fmt.Fprintf(stderr, "admin: %v\n", err)
			return ExitUsage
		}
		c.http.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	err := c.dispatch(ctx, args)
	if err == nil {
		return ExitOK
	}
	var ue usageError
	var ee exitError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "admin %s\n(admin help shows the usage)\n", err)
		return ExitUsage
	case errors.As(err, &ee):
		fmt.Fprintf(stderr, "admin %s\n", err)
		return ee.code
	}
	fmt.Fprintf(stderr, "admin %s\n", err)
	return ExitFailed
}

func (c *client) dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("needs a command")
	}
	switch args[0] {
	case "help", "-h", "--help", "-help":
		WriteUsage(c.out)
		return nil
	case "weights":
		if len(args) < 2 {
			return usagef("weights: want get or set")
		}
		switch args[1] {
		case "get":
			if err := noArgs("weights get", args[2:]); err != nil {
				return err
			}
			return c.weightsGet(ctx)
		case "set":
			return c.weightsSet(ctx, args[2:])
		}
		return usagef("weights %q: want get or set", args[1])
	case "status":
		if err := noArgs("status", args[1:]); err != nil {
			return err
		}
		return c.status(ctx)
	case "records":
		return c.records(ctx, args[1:])
	case "history":
		return c.history(ctx, args[1:])
	case "backends":
		return c.backends(ctx, args[1:])
	case "mode":
		return c.mode(ctx, args[1:])
	}
	return usagef("unknown command %q", args[0])
}

func noArgs(cmd string, args []string) error {
	if len(args) > 0 {
		return usagef("%s: unexpected argument %q", cmd, args[0])
	}
	return nil
}

// parse parses flags anywhere among the arguments and returns the
// positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// ParseWeights reads NAME=WEIGHT arguments.
func ParseWeights(args []string) (map[string]int, error) {
	if len(args) == 0 {
		return nil, usagef("weights set: want NAME=WEIGHT arguments, e.g. redis-a=30 redis-b=70")
	}
	out := make(map[string]int, len(args))
	for _, a := range args {
		name, w, ok := strings.Cut(a, "=")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, usagef("weights set: %q: want NAME=WEIGHT", a)
		}
		n, err := strconv.Atoi(w)
		if err != nil || n < 0 || n > control.MaxWeight {
			return nil, usagef("weights set: %q: weight must be an integer 0..%d", a, control.MaxWeight)
		}
		if _, dup := out[name]; dup {
			return nil, usagef("weights set: %q: backend %q given twice", a, name)
		}
		out[name] = n
	}
	return out, nil
}

func age(ms int64) string {
	d := time.Duration(ms) * time.Millisecond
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%.1fs ago", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds ago", int(d.Minutes()), int(d.Seconds())%60)
	}
	return d.Round(time.Minute).String() + " ago"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func bytesIEC(n int64) string {
	if n < 0 {
		return "-"
	}
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
