package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/connpipe/connpipe/services/capture/internal/filter"
	"github.com/connpipe/connpipe/shared/config"
	"github.com/prometheus/client_golang/prometheus"
)

// Config is capture's configuration, read from the environment and
// optionally overridden by command-line flags. Its tags are the one source
// of each variable's name, default and meaning (WriteUsage, the README).
type Config struct {
	config.AMQP
	Interface       string        `envconfig:"INTERFACE" default:"lo" desc:"interface for live capture; any: every interface (all must be Ethernet or loopback), keeping what arrives"`
	ListenAddr      string        `envconfig:"LISTEN_ADDR" default:"127.0.0.1:7000" desc:"record packets sent to this IP:port (0.0.0.0 or [::] as host: any address)"`
	BPFFilter       string        `envconfig:"BPF_FILTER" desc:"filter expression, a tcpdump subset (empty: tcp and dst host and port of LISTEN_ADDR; with PCAP_FILES and no LISTEN_ADDR, every TCP packet)"`
	Decap           string        `envconfig:"DECAP" desc:"mirror mode: tunnels to open, comma-separated, of vxlan, geneve, gre (transparent Ethernet bridging, IP) and erspan (types I, II, III); the filter applies to the packet inside (empty: none)"`
	DecapVXLANPort  uint16        `envconfig:"DECAP_VXLAN_PORT" default:"4789" desc:"UDP destination port of VXLAN in mirror mode"`
	DecapGenevePort uint16        `envconfig:"DECAP_GENEVE_PORT" default:"6081" desc:"UDP destination port of Geneve in mirror mode"`
	DecapVNIs       string        `envconfig:"DECAP_VNIS" desc:"mirror mode: the only VXLAN and Geneve VNIs accepted, comma-separated (empty: any)"`
	DecapSessions   string        `envconfig:"DECAP_ERSPAN_SESSIONS" desc:"mirror mode: the only ERSPAN session ids accepted, comma-separated; type I frames carry none and are then refused (empty: any)"`
	Sink            bool          `envconfig:"SINK" default:"false" desc:"true: accept and discard connections on LISTEN_ADDR, so senders have a peer"`
	PcapFiles       []string      `envconfig:"PCAP_FILES" desc:"comma-separated pcap/pcapng files to replay (empty: live capture)"`
	ReplaySpeed     float64       `envconfig:"REPLAY_SPEED" default:"0" desc:"replay at N times the recorded speed; 0 as fast as possible"`
	Output          string        `envconfig:"OUTPUT" default:"amqp" desc:"amqp (publish to RabbitMQ) or stdout (print one line per packet)"`
	BatchSize       int           `envconfig:"BATCH_SIZE" default:"512" desc:"records per AMQP message"`
	BatchInterval   time.Duration `envconfig:"BATCH_INTERVAL" default:"50ms" desc:"longest a record waits for its batch to fill"`
	MaxInFlight     int           `envconfig:"MAX_IN_FLIGHT" default:"256" desc:"messages published and not yet confirmed"`
	Snaplen         int           `envconfig:"SNAPLEN" default:"262144" desc:"bytes kept of each live frame"`
	CaptureWorkers  int           `envconfig:"CAPTURE_WORKERS" default:"0" desc:"live readers in one fan-out group, each with a ring (0: the number of CPUs); set, it is also GOMAXPROCS unless that is set"`
	RingBlockSize   int           `envconfig:"RING_BLOCK_SIZE" default:"2097152" desc:"bytes per ring block, a multiple of 4096"`
	RingBlocks      int           `envconfig:"RING_BLOCKS" default:"8" desc:"blocks per reader's ring: each reader maps RING_BLOCKS x RING_BLOCK_SIZE"`
	RingTimeout     time.Duration `envconfig:"RING_TIMEOUT" default:"200ms" desc:"a block that is not full is handed over after this"`
	config.Ops
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"10s" desc:"how long a stop waits for the broker's confirms"`
	KeyRule         string        `envconfig:"KEY_RULE" desc:"a regular expression with one capture group matched against each connection's first client bytes: the payload key (empty: none)"`
	KeyScanBytes    int           `envconfig:"KEY_SCAN_BYTES" default:"8192" desc:"client bytes of a connection scanned for KEY_RULE"`
	KeyWait         time.Duration `envconfig:"KEY_WAIT" default:"1s" desc:"longest a connection's records are held waiting for its key"`
	KeyMaxConns     int           `envconfig:"KEY_MAX_CONNS" default:"65536" desc:"connections held for their key at once; the oldest is released beyond it"`
	KeyMaxBytes     int64         `envconfig:"KEY_MAX_BYTES" default:"67108864" desc:"memory for held records and reassembly; the oldest connection is released beyond it"`
	SpoolDir        string        `envconfig:"SPOOL_DIR" desc:"directory of the disk spool for batches the broker cannot take yet (empty: no spool)"`
	SpoolMaxBytes   int64         `envconfig:"SPOOL_MAX_BYTES" default:"1073741824" desc:"the spool's size on disk at most"`
	SpoolFullPolicy string        `envconfig:"SPOOL_FULL_POLICY" default:"drop-newest" desc:"what a full spool drops: drop-newest or drop-oldest (counted, logged)"`
	SpoolFsync      string        `envconfig:"SPOOL_FSYNC" default:"interval" desc:"interval (once a second), batch (every batch) or never"`

	// Stdout receives OUTPUT=stdout lines (os.Stdout when nil).
	Stdout io.Writer `ignored:"true"`
	// Ready, when set, is called once capture is reading: the live socket
	// is bound (or the first file is open), the sink listens and the
	// metrics server is serving.
	Ready func(Info) `ignored:"true"`
}

// Tune gives capture's metrics port.
func (Config) Tune() []config.Var { return []config.Var{{Name: "METRICS_ADDR", Default: ":9100"}} }

// Info describes a running capture, for Ready.
type Info struct {
	MetricsAddr string // bound metrics address, "" when METRICS_ADDR is empty
	SinkAddr    string // bound sink address, "" without SINK
	Filter      string // the filter in force, as a tcpdump expression
	Registry    *prometheus.Registry
}

// Outputs.
const (
	OutputAMQP   = "amqp"
	OutputStdout = "stdout"
)

// Validate checks every value and returns an error naming the variable of
// the first bad one.
func (c *Config) Validate() error {
	if _, err := c.filter(); err != nil {
		return err
	}
	if err := c.AMQP.Check(); err != nil {
		return err
	}
	switch c.Output {
	case OutputAMQP, OutputStdout:
	default:
		return fmt.Errorf("OUTPUT=%q: want %s or %s", c.Output, OutputAMQP, OutputStdout)
	}
	if c.BatchSize < 1 {
		return fmt.Errorf("BATCH_SIZE=%d: must be at least 1", c.BatchSize)
	}
	if c.BatchInterval <= 0 {
		return fmt.Errorf("BATCH_INTERVAL=%s: must be positive", c.BatchInterval)
	}
	if c.MaxInFlight < 1 {
		return fmt.Errorf("MAX_IN_FLIGHT=%d: must be at least 1", c.MaxInFlight)
	}
	if c.Snaplen < 64 || c.Snaplen > 1<<20 {
		return fmt.Errorf("SNAPLEN=%d: want 64..1048576 bytes", c.Snaplen)
	}
	if err := c.validateRing(); err != nil {
		return err
	}
	if c.ReplaySpeed < 0 {
		return fmt.Errorf("REPLAY_SPEED=%g: want 0 (as fast as possible) or a positive multiplier of the recorded speed", c.ReplaySpeed)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("SHUTDOWN_TIMEOUT=%s: must be positive", c.ShutdownTimeout)
	}
	for _, p := range c.PcapFiles {
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("PCAP_FILES: %w", err)
		}
		if st.IsDir() {
			return fmt.Errorf("PCAP_FILES: %s is a directory", p)
		}
	}
	if _, err := c.tunnels(); err != nil {
		return err
	}
	if err := c.validateKey(); err != nil {
		return err
	}
	if err := c.validateSpool(); err != nil {
		return err
	}
	if len(c.PcapFiles) == 0 && c.Interface == "" {
		return errors.New("INTERFACE is empty: name the interface to capture on, or set PCAP_FILES")
	}
	return nil
}

// listen parses LISTEN_ADDR.
func (c *Config) listen() (netip.AddrPort, error) {
	ap, err := filter.ParseListen(c.ListenAddr)
	if err != nil {
		return ap, fmt.Errorf("LISTEN_ADDR=%q: %w", c.ListenAddr, err)
	}
	return ap, nil
}

// filter is BPF_FILTER when set, else the filter of LISTEN_ADDR.
func (c *Config) filter() (*filter.Filter, error) {
	ap, err := c.listen()
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(c.BPFFilter) != "" {
		f, err := filter.Parse(c.BPFFilter)
		if err != nil {
			return nil, fmt.Errorf("BPF_FILTER=%q: %w", c.BPFFilter, err)
		}
		return f, nil
	}
	return filter.FromListen(ap), nil
}

// usageHead is the help text before the table of variables.
const usageHead = `capture records every TCP packet sent to a listening IP:port and publishes
the records to RabbitMQ (or prints them).

Usage:
  capture                       configured by the environment (below)
  capture -r FILE[,FILE...] [-f EXPR | -listen IP:PORT] [-speed N]
                                print the TCP packets of capture files, one per
                                line, without a broker (like tcpdump -r)

Flags (each overrides its variable for this run):
  -r FILES       pcap/pcapng files to read (PCAP_FILES); prints to stdout
                 (OUTPUT=stdout) and serves no metrics unless -metrics is given
  -f EXPR        filter expression (BPF_FILTER); with -r and neither -f nor
                 -listen, every TCP packet is printed
  -listen ADDR   record packets sent to ADDR (LISTEN_ADDR)
  -i IFACE       interface for live capture (INTERFACE)
  -speed N       replay at N times the recorded speed, 0 = as fast as possible
                 (REPLAY_SPEED)
  -o OUTPUT      amqp or stdout (OUTPUT)
  -metrics ADDR  serve /metrics and /healthz on ADDR (METRICS_ADDR)
  -decap LIST    mirror mode: open these tunnels (vxlan, geneve, gre, erspan)
                 and record the TCP packets inside them (DECAP)

Output lines are tab-separated: ts_ns src_ip dst_ip src_port dst_port
tcp_flags ip_len [key], tcp_flags as 0x%04x.

Filter expressions (BPF_FILTER, -f): primitives joined by "and" (or &&):
  tcp | ip | ip6 | [src|dst] host ADDR | [src|dst] net CIDR | [src|dst] port N
e.g. "dst port 80", "tcp dst port 8080 and dst host ::1". Every filter implies
tcp; or, not and parentheses are not supported.

Environment (name, default, meaning):
`

// WriteUsage prints the help text: the flags, then every variable with its
// default and meaning, from Config's tags.
func WriteUsage(w io.Writer) {
	fmt.Fprint(w, usageHead)
	config.WriteUsage(w, Config{})
}

// LoadConfig reads the environment, applies the flags in args and
// validates the result. It returns flag.ErrHelp after printing Usage to
// stderr for -h.
func LoadConfig(args []string, stderr io.Writer) (Config, error) {
	var c Config
	if err := config.Load(&c); err != nil {
		return c, err
	}
	fs := flag.NewFlagSet("capture", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { WriteUsage(stderr) }
	files := fs.String("r", "", "pcap/pcapng `files` to read, comma-separated (PCAP_FILES)")
	expr := fs.String("f", "", "filter `expression` (BPF_FILTER)")
	listen := fs.String("listen", "", "record packets sent to `IP:PORT` (LISTEN_ADDR)")
	iface := fs.String("i", "", "`interface` for live capture (INTERFACE)")
	speed := fs.Float64("speed", -1, "replay at `N` times the recorded speed, 0 as fast as possible (REPLAY_SPEED)")
	out := fs.String("o", "", "amqp or stdout (OUTPUT)")
	metrics := fs.String("metrics", "", "serve /metrics and /healthz on `ADDR` (METRICS_ADDR)")
	decap := fs.String("decap", "", "mirror mode: `tunnels` to open, of vxlan, geneve, gre, erspan (DECAP)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q (a filter goes in -f)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["r"] {
		c.PcapFiles = nil
		for _, p := range strings.Split(*files, ",") {
			if p = strings.TrimSpace(p); p != "" {
				c.PcapFiles = append(c.PcapFiles, p)
			}
		}
		if len(c.PcapFiles) == 0 {
			return c, errors.New("-r: no file named")
		}
		c.Output = OutputStdout
		c.MetricsAddr = ""
		c.Sink = false
		if !set["f"] && !set["listen"] {
			c.BPFFilter = "tcp"
		}
	}
	if set["listen"] {
		if _, err := filter.ParseListen(*listen); err != nil {
			return c, fmt.Errorf("-listen %q: %w", *listen, err)
		}
		c.ListenAddr = *listen
		c.BPFFilter = ""
	}
	if set["f"] {
		if _, err := filter.Parse(*expr); err != nil {
			return c, fmt.Errorf("-f %q: %w", *expr, err)
		}
		c.BPFFilter = *expr
	}
	// A replay with neither a filter nor a listen address records every
	// TCP packet of the files (the default LISTEN_ADDR is for live capture).
	if len(c.PcapFiles) > 0 && strings.TrimSpace(c.BPFFilter) == "" && !set["listen"] {
		if _, ok := os.LookupEnv("LISTEN_ADDR"); !ok {
			c.BPFFilter = "tcp"
		}
	}
	if set["i"] {
		c.Interface = *iface
	}
	if set["speed"] {
		c.ReplaySpeed = *speed
	}
	if set["o"] {
		c.Output = *out
	}
	if set["metrics"] {
		c.MetricsAddr = *metrics
	}
	if set["decap"] {
		c.Decap = *decap
	}
	return c, c.Validate()
}
