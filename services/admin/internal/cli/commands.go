package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/connpipe/connpipe/services/admin/internal/api"
	"github.com/connpipe/connpipe/shared/control"
)

const requestTimeout = 30 * time.Second

func (c *client) printTable(t *control.Table) {
	fmt.Fprintf(c.out, "version %d (log position %d)\n%s\n%s\n", t.Version, t.Position, t.String(), routingLine(t))
	total := 0
	for _, b := range t.Backends {
		total += b.Weight
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	for _, b := range t.Backends {
		share := 0.0
		if total > 0 {
			share = 100 * float64(b.Weight) / float64(total)
		}
		fmt.Fprintf(tw, "  %s\t%s\tweight %d\t%.1f%%\n", b.Name, b.Addr, b.Weight, share)
	}
	tw.Flush()
}

func (c *client) weightsGet(ctx context.Context) error {
	var t control.Table
	if _, err := c.do(ctx, http.MethodGet, "/api/v1/weights", nil, nil, requestTimeout, &t); err != nil {
		return fmt.Errorf("weights get: %w", err)
	}
	c.printTable(&t)
	return nil
}

func (c *client) weightsSet(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("weights set", flag.ContinueOnError)
	f := addChangeFlags(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	weights, err := ParseWeights(pos)
	if err != nil {
		return err
	}
	return c.sendChange(ctx, "weights set", http.MethodPut, "/api/v1/weights", api.WeightsRequest{Weights: weights}, f)
}

func (c *client) status(ctx context.Context) error {
	var st api.Status
	if _, err := c.do(ctx, http.MethodGet, "/api/v1/status", nil, nil, requestTimeout, &st); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	log := "read"
	if !st.Ready {
		log = "NOT READ YET"
	}
	conn := "connected"
	if !st.Connected {
		conn = "DISCONNECTED (" + st.Session + ")"
	}
	routing := ""
	if st.Table.RoutingMode() != control.ModeWeighted || st.Table.Sticky {
		routing = "  (" + routingLine(st.Table) + ")"
	}
	fmt.Fprintf(c.out, "table   version %d (log position %d)  %s%s\ncontrol log %s, rabbitmq %s\n", st.Table.Version, st.Table.Position, st.Weights, routing, log, conn)
	alive := fmt.Sprintf("%d live consumer", st.ConsumersAlive)
	if st.ConsumersAlive != 1 {
		alive += "s"
	}
	fmt.Fprintf(c.out, "converged %s (%s, timeout %s)\n\n", yesNo(st.Converged), alive, time.Duration(st.TimeoutMS)*time.Millisecond)

	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONSUMER\tHOST\tALIVE\tREADY\tVERSION\tPOSITION\tCONVERGED\tRECORDS\tACKED\tLAST HEARTBEAT")
	for _, m := range st.Consumers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%d\t%d\t%s\n", m.ID, orDash(m.Host), yesNo(m.Alive), yesNo(m.Ready),
			m.Version, m.Position, yesNo(m.Converged), m.Records, m.Acked, age(m.HeartbeatAgeMS))
	}
	if len(st.Consumers) == 0 {
		fmt.Fprintln(tw, "(none heard from)")
	}
	tw.Flush()
	fmt.Fprintln(c.out)
	tw = tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tADDRESS\tWEIGHT\tSHARE\tREACHABLE\tUSED MEMORY")
	// A backend's state is on the page; a sentinel backend's line below it
	// gives the state, its primary and its replicas.
	for _, b := range st.Backends {
		reach := yesNo(b.Reachable)
		if b.Error != "" {
			reach += " (" + b.Error + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f%%\t%s\t%s\n", b.Name, b.Addr, b.Weight, 100*b.Share, reach, bytesIEC(b.UsedMemory))
		if b.Sentinel != nil {
			fmt.Fprintf(tw, "  %s\tprimary %s, replicas: %s\t\t\t\t\n", b.State, b.Sentinel.Primary, orDash(strings.Join(b.Sentinel.Replicas, ", ")))
		}
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// count prints the answer of a records question asked with count=true:
// one line per instance and the total, or the JSON answer.
func (c *client) count(ctx context.Context, q url.Values, asJSON bool) error {
	var res api.CountResponse
	if _, err := c.do(ctx, http.MethodGet, "/api/v1/records?"+q.Encode(), nil, nil, requestTimeout, &res); err != nil {
		return fmt.Errorf("records: %w", err)
	}
	if asJSON {
		return json.NewEncoder(c.out).Encode(res)
	}
	for _, n := range slices.Sorted(maps.Keys(res.CountByBackend)) {
		fmt.Fprintf(c.out, "%s\t%d\n", n, res.CountByBackend[n])
	}
	fmt.Fprintf(c.out, "total\t%d\n", res.Total)
	how := "from the per-second counters"
	if res.Source != "counters" {
		how = "by reading the records"
	}
	summary := fmt.Sprintf("buckets %d..%d, counted %s, %d bytes read from Redis", res.From, res.To, how, res.BytesFetched)
	if res.Owner != "" {
		summary += ", asked only " + res.Owner + ", the key's owner (--all asks every instance)"
	}
	fmt.Fprintln(c.errw, summary)
	for _, n := range slices.Sorted(maps.Keys(res.Errors)) {
		fmt.Fprintf(c.errw, "backend %s not read: %s\n", n, res.Errors[n])
	}
	return nil
}

func (c *client) records(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("records", flag.ContinueOnError)
	since := fs.String("since", "1m", "start of the window: a duration back from now, RFC 3339 or Unix seconds")
	until := fs.String("until", "", "end of the window (default now)")
	src := fs.String("src", "", "source IP")
	dst := fs.String("dst", "", "destination IP")
	key := fs.String("key", "", "payload key (capture's KEY_RULE)")
	limit := fs.Int("limit", 0, "at most this many records (default 10000)")
	asJSON := fs.Bool("json", false, "one JSON object per line")
	all := fs.Bool("all", false, "in hash mode, ask every instance, not only the key's owner")
	count := fs.Bool("count", false, "print how many records each instance holds for the window and filter (no limit) instead of the records")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("records: unexpected argument %q", pos[0])
	}
	if *limit < 0 {
		return usagef("records: --limit %d: want a positive number", *limit)
	}
	q := url.Values{}
	for k, v := range map[string]string{"since": *since, "until": *until, "src": *src, "dst": *dst, "key": *key} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if *limit > 0 {
		q.Set("limit", strconv.Itoa(*limit))
	}
	if *all {
		q.Set("all", "true")
	}
	if *count {
		q.Set("count", "true")
		return c.count(ctx, q, *asJSON)
	}
	var res api.RecordsResponse
	if _, err := c.do(ctx, http.MethodGet, "/api/v1/records?"+q.Encode(), nil, nil, requestTimeout, &res); err != nil {
		return fmt.Errorf("records: %w", err)
	}
	enc := json.NewEncoder(c.out)
	for i := range res.Records {
		it := &res.Records[i]
		if *asJSON {
			if err := enc.Encode(it); err != nil {
				return err
			}
			continue
		}
		r, err := it.JSON.Record()
		if err != nil {
			return fmt.Errorf("records: record %d from %s: %w", i, it.Backend, err)
		}
		fmt.Fprintf(c.out, "%s\t%s\n", it.Backend, r)
	}
	names := make([]string, 0, len(res.CountByBackend))
	for n := range res.CountByBackend {
		names = append(names, n)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s=%d", n, res.CountByBackend[n])
	}
	noun := "records"
	if len(res.Records) == 1 {
		noun = "record"
	}
	summary := fmt.Sprintf("%d %s (%s), buckets %d..%d, %d bytes read from Redis", len(res.Records), noun, strings.Join(parts, " "), res.From, res.To, res.BytesFetched)
	if res.Owner != "" {
		summary += ", asked only " + res.Owner + ", the key's owner (--all asks every instance)"
	}
	if res.Truncated {
		summary += ", truncated at the limit: narrow the window or raise --limit"
	}
	fmt.Fprintln(c.errw, summary)
	for _, n := range slices.Sorted(maps.Keys(res.Errors)) {
		fmt.Fprintf(c.errw, "backend %s not read: %s\n", n, res.Errors[n])
	}
	return nil
}

// history prints the control log's changes: time, operator, version, what.
func (c *client) history(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("history", flag.ContinueOnError)
	since := fs.String("since", "", "changes published since: a duration back from now, RFC 3339 or Unix seconds")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("history: unexpected argument %q", pos[0])
	}
	path := "/api/v1/history"
	if *since != "" {
		path += "?since=" + url.QueryEscape(*since)
	}
	var h api.History
	if _, err := c.do(ctx, http.MethodGet, path, nil, nil, requestTimeout, &h); err != nil {
		return fmt.Errorf("history: %w", err)
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tBY\tVERSION\tPOSITION\tCHANGE")
	for _, e := range h.Entries {
		when := "-"
		if !e.Time.IsZero() {
			when = e.Time.UTC().Format(time.RFC3339)
		}
		by := cmp.Or(e.By, "-")
		what := e.What
		if e.Refused != "" {
			what += " (refused: " + e.Refused + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\tv%d\t%d\t%s\n", when, by, e.Version, e.Position, what)
	}
	return tw.Flush()
}
