package capturestats

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
)

// Target is one capture as admin sees it: where its metrics were scraped
// from and what they said.
type Target struct {
	// Name is the host as configured; Addr the address scraped (one per
	// replica when the name resolves to several).
	Name string `json:"name"`
	Addr string `json:"addr"`
	URL  string `json:"url"` // the URL scraped, with any password redacted
	Stats
	Error string `json:"error,omitempty"`
}

// Resolver looks up a host name's addresses (net.DefaultResolver).
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Set scrapes every capture that CAPTURE_METRICS_URL names: a
// comma-separated list of URLs whose host names may each stand for several
// captures. A compose service scaled to N replicas resolves to N addresses,
// and each is scraped and shown on its own, so the page lists every capture
// without being told how many there are.
type Set struct {
	URLs     []*url.URL
	Token    string   // bearer token for each scrape (CAPTURE_METRICS_TOKEN)
	Resolver Resolver // default net.DefaultResolver

	mu       sync.Mutex
	scrapers map[string]*Scraper // by the URL scraped
}

// ParseURLs reads a comma-separated list of http(s) metrics URLs, naming
// the bad one in its error without showing any password it holds.
func ParseURLs(list string) ([]*url.URL, error) {
	var out []*url.URL
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			shown := s
			if err == nil {
				shown = u.Redacted()
			} else if at := strings.LastIndex(s, "@"); at >= 0 {
				shown = "…" + s[at:]
			}
			return nil, fmt.Errorf("CAPTURE_METRICS_URL: %q is not an http URL such as http://127.0.0.1:9100/metrics", shown)
		}
		out = append(out, u)
	}
	return out, nil
}

// Stats scrapes every capture at once (each at most once per
// DefaultInterval) and returns them sorted by name and address.
func (s *Set) Stats(ctx context.Context) []Target {
	res := s.Resolver
	if res == nil {
		res = net.DefaultResolver
	}
	var targets []Target
	var urls []*url.URL // urls[i] is scraped into targets[at[i]]
	var at []int
	for _, u := range s.URLs {
		host, port := u.Hostname(), u.Port()
		addrs := []string{host}
		if net.ParseIP(host) == nil {
			found, err := res.LookupHost(ctx, host)
			if err != nil || len(found) == 0 {
				if err == nil {
					err = fmt.Errorf("no address")
				}
				targets = append(targets, Target{Name: host, URL: u.Redacted(), Error: "resolve " + host + ": " + err.Error()})
				continue
			}
			addrs = found
		}
		for _, a := range addrs {
			t := *u
			if port != "" {
				t.Host = net.JoinHostPort(a, port)
			} else {
				t.Host = a
				if strings.Contains(a, ":") {
					t.Host = "[" + a + "]"
				}
			}
			at = append(at, len(targets))
			targets = append(targets, Target{Name: host, Addr: a, URL: t.Redacted()})
			urls = append(urls, &t)
		}
	}
	var wg sync.WaitGroup
	for i, u := range urls {
		sc, t := s.scraper(u), &targets[at[i]]
		wg.Go(func() {
			st, err := sc.Stats(ctx)
			t.Stats = st
			if err != nil {
				t.Error = err.Error()
			}
		})
	}
	wg.Wait()
	sort.SliceStable(targets, func(i, j int) bool {
		if targets[i].Name != targets[j].Name {
			return targets[i].Name < targets[j].Name
		}
		return targets[i].Addr < targets[j].Addr
	})
	return targets
}

func (s *Set) scraper(u *url.URL) *Scraper {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := u.String()
	if s.scrapers == nil {
		s.scrapers = map[string]*Scraper{}
	}
	sc, ok := s.scrapers[key]
	if !ok {
		// A replica that went away leaves its scraper behind; bound the
		// map so a churning service cannot grow it without end.
		if len(s.scrapers) >= 256 {
			clear(s.scrapers)
		}
		sc = &Scraper{URL: key, Token: s.Token}
		s.scrapers[key] = sc
	}
	return sc
}

// Sum adds up the captures that answered: the pipeline's totals. A metric
// that any of them lacked is listed as missing.
func Sum(ts []Target) Stats {
	sum := Stats{ByReason: map[string]float64{}}
	missing := map[string]bool{}
	for _, t := range ts {
		if t.Error != "" {
			continue
		}
		for _, m := range t.Missing {
			if !missing[m] {
				missing[m] = true
				sum.Missing = append(sum.Missing, m)
			}
		}
		sum.Packets += t.Packets
		sum.Published += t.Published
		sum.Confirmed += t.Confirmed
		sum.KernelDrops += t.KernelDrops
		sum.DecodeErrors += t.DecodeErrors
		sum.SpoolRecords += t.SpoolRecords
		sum.SpoolBytes += t.SpoolBytes
		sum.SpoolMaxBytes += t.SpoolMaxBytes
		sum.SpoolOldestSec = max(sum.SpoolOldestSec, t.SpoolOldestSec)
		sum.SpoolDropped += t.SpoolDropped
		sum.DrainRate += t.DrainRate
		sum.BrokerBlocked += t.BrokerBlocked
		sum.RingFreezes += t.RingFreezes
		for k, v := range t.ByReason {
			sum.ByReason[k] += v
		}
	}
	return sum
}
