package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/apitypes"
	"github.com/connpipe/connpipe/shared/control"
)

// routingLine renders a table's mode: "mode weighted" or
// "mode hash on src, sticky".
func routingLine(t *control.Table) string {
	s := "mode " + t.RoutingMode().String()
	if t.RoutingMode().Info().Hashed {
		s += " on " + t.Key().String()
	}
	if t.Sticky {
		s += ", sticky"
	}
	return s
}

// changeFlags are the flags every routing change takes.
type changeFlags struct {
	expect *int64
	wait   *time.Duration
}

func addChangeFlags(fs *flag.FlagSet) changeFlags {
	return changeFlags{
		expect: fs.Int64("expect-version", -1, "refuse unless the table is at this version"),
		wait:   fs.Duration("wait", 0, "wait this long for every live consumer to apply the change"),
	}
}

// sendChange publishes one change through the API and reports the answer.
func (c *client) sendChange(ctx context.Context, cmd, method, path string, body any, f changeFlags) error {
	if *f.wait < 0 || *f.wait > apitypes.MaxWait {
		return usagef("%s: --wait %s: want 0s..%s", cmd, *f.wait, apitypes.MaxWait)
	}
	h := http.Header{}
	if *f.expect >= 0 {
		h.Set("If-Match", strconv.Quote(strconv.FormatInt(*f.expect, 10)))
	} else if *f.expect != -1 {
		return usagef("%s: --expect-version %d: want a version 0 or above", cmd, *f.expect)
	}
	if *f.wait > 0 {
		path += "?wait=" + url.QueryEscape(f.wait.String())
	}
	var res apitypes.WeightsResponse
	if _, err := c.do(ctx, method, path, body, h, requestTimeout+*f.wait, &res); err != nil {
		var he *httpError
		if errors.As(err, &he) {
			switch he.code {
			case http.StatusConflict, http.StatusBadRequest:
				return fmt.Errorf("%s: refused, %s", cmd, he.message)
			case http.StatusUnauthorized, http.StatusForbidden:
				return fmt.Errorf("%s: %s: %s (set ADMIN_TOKEN)", cmd, he.status, he.message)
			}
		}
		return fmt.Errorf("%s: %w", cmd, err)
	}
	fmt.Fprintf(c.out, "applied as %s at log position %d\n", res.ID, res.ChangePosition)
	c.printTable(&res.Table)
	switch {
	case res.ConsumersAlive == 0:
		fmt.Fprintln(c.out, "no live consumer to apply it yet")
	case res.Converged:
		fmt.Fprintf(c.out, "converged: all %d live consumers applied it\n", res.ConsumersAlive)
	case *f.wait > 0:
		return exitError{ExitNotConverged, fmt.Errorf("%s: not converged after %s: %d of %d live consumers have not applied it: %s",
			cmd, *f.wait, len(res.Pending), res.ConsumersAlive, strings.Join(res.Pending, ", "))}
	default:
		fmt.Fprintf(c.out, "pending: %d of %d live consumers have not applied it yet (use --wait)\n", len(res.Pending), res.ConsumersAlive)
	}
	return nil
}

// backends runs "admin backends add|remove ...".
func (c *client) backends(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("backends: want add or remove")
	}
	switch args[0] {
	case "add":
		fs := flag.NewFlagSet("backends add", flag.ContinueOnError)
		weight := fs.Int("weight", 1, "weight of the new backend, 0..256")
		cred := fs.String("credential", "", "the login to use, by its name in each reader's REDIS_CREDENTIALS")
		f := addChangeFlags(fs)
		pos, err := parse(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 2 {
			return usagef("backends add: want NAME HOST:PORT, e.g. backends add redis-c 127.0.0.1:6381 --weight 50")
		}
		if *weight < 0 || *weight > control.MaxWeight {
			return usagef("backends add: --weight %d: want 0..%d", *weight, control.MaxWeight)
		}
		return c.sendChange(ctx, "backends add", http.MethodPost, "/api/v1/backends",
			apitypes.BackendRequest{Name: pos[0], Addr: pos[1], Weight: weight, Credential: *cred}, f)
	case "remove":
		fs := flag.NewFlagSet("backends remove", flag.ContinueOnError)
		f := addChangeFlags(fs)
		pos, err := parse(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("backends remove: want NAME")
		}
		return c.sendChange(ctx, "backends remove", http.MethodDelete, "/api/v1/backends/"+url.PathEscape(pos[0]), nil, f)
	}
	return usagef("backends %q: want add or remove", args[0])
}

// mode runs "admin mode set MODE [--key K] [--sticky[=false]]", the modes
// and keys those of control.Modes and control.HashKeys.
func (c *client) mode(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "set" {
		return usagef("mode: want set")
	}
	fs := flag.NewFlagSet("mode set", flag.ContinueOnError)
	key := fs.String("key", "", "hash key: "+strings.Join(control.HashKeyNames(), ", "))
	sticky := fs.Bool("sticky", false, "keep each key on the instance where it first landed")
	f := addChangeFlags(fs)
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	var req apitypes.ModeRequest
	if *key != "" {
		if req.HashKey, err = control.ParseHashKey(*key); err != nil {
			return usagef("mode set: --key: %v", err)
		}
	}
	fs.Visit(func(fl *flag.Flag) {
		if fl.Name == "sticky" {
			req.Sticky = sticky
		}
	})
	switch len(pos) {
	case 0:
	case 1:
		if req.Mode, err = control.ParseMode(pos[0]); err != nil {
			return usagef("mode set: %v", err)
		}
	default:
		return usagef("mode set: unexpected argument %q", pos[1])
	}
	if req.Mode == "" && req.HashKey == "" && req.Sticky == nil {
		return usagef("mode set: want %s, --key or --sticky", strings.Join(control.ModeNames(), " or "))
	}
	return c.sendChange(ctx, "mode set", http.MethodPut, "/api/v1/mode", req, f)
}
