package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

const rabbitBin = "/usr/lib/rabbitmq/bin"

// Rabbit is a RabbitMQ node of one test's own, for what the shared test
// broker must not be put through: alarms, TLS listeners, restarts. It boots
// in about half a minute and is stopped when the test ends.
type Rabbit struct {
	Name string // node name
	Port int    // AMQP port on 127.0.0.1
	Dir  string // data, configuration, log

	t   testing.TB
	env []string
	cmd *exec.Cmd
	out Buffer
}

// RabbitOptions configure a private node.
type RabbitOptions struct {
	Name string // node name before @localhost; unique on the machine
	Port int    // AMQP port; the distribution port is Port+20000
	// Conf is appended to rabbitmq.conf (a TLS listener, say); Dir is
	// known before it is written, as {{dir}} in Conf.
	Conf string
	// Files are written into the node's directory before it starts.
	Files map[string][]byte
}

// StartRabbit boots a private node and waits until it accepts AMQP
// connections. Without rabbitmq-server the test is skipped naming it (and
// fails under CI).
func StartRabbit(t testing.TB, o RabbitOptions) *Rabbit {
	t.Helper()
	if _, err := os.Stat(filepath.Join(rabbitBin, "rabbitmq-server")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("rabbitmq-server not installed (%v)", err)
		}
		t.Skipf("rabbitmq-server not installed at %s (scripts/testenv.sh up installs it)", rabbitBin)
	}
	for _, p := range []int{o.Port, o.Port + 20000} {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), time.Second); err == nil {
			c.Close()
			t.Fatalf("port %d is taken: a private node from an earlier run?", p)
		}
	}
	dir, err := os.MkdirTemp("", "connpipe-rabbit-"+o.Name+"-")
	if err != nil {
		t.Fatal(err)
	}
	r := &Rabbit{Name: o.Name + "@localhost", Port: o.Port, Dir: dir, t: t}
	conf := fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nloopback_users = none\n"+
		"vm_memory_high_watermark.relative = 0.4\ndisk_free_limit.absolute = 50MB\n", o.Port)
	conf += string(bytes.ReplaceAll([]byte(o.Conf), []byte("{{dir}}"), []byte(dir)))
	files := map[string][]byte{"rabbitmq.conf": []byte(conf), "enabled_plugins": []byte("[].\n")}
	for name, b := range o.Files {
		files[name] = b
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r.env = append(os.Environ(),
		"HOME="+dir, // the Erlang cookie sits beside the data
		"RABBITMQ_NODENAME="+r.Name,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		fmt.Sprintf("RABBITMQ_NODE_PORT=%d", o.Port),
		fmt.Sprintf("RABBITMQ_DIST_PORT=%d", o.Port+20000),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq"),
	)
	r.cmd = exec.Command(filepath.Join(rabbitBin, "rabbitmq-server"))
	r.cmd.Env, r.cmd.Stdout, r.cmd.Stderr = r.env, &r.out, &r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_, _ = r.Ctl("stop")
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = r.cmd.Process.Kill()
			<-exited
		}
		os.RemoveAll(dir)
	})
	t0 := time.Now()
	for {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", o.Port), time.Second); err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("private rabbitmq %s exited:\n%s", r.Name, r.Output())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Since(t0) > 120*time.Second {
			t.Fatalf("private rabbitmq %s not up after 120s:\n%s", r.Name, r.Output())
		}
	}
	t.Logf("private rabbitmq node %s up after %s", r.Name, time.Since(t0).Round(100*time.Millisecond))
	return r
}

// Output is what the node printed.
func (r *Rabbit) Output() string { return r.out.String() }

// Ctl runs rabbitmqctl against the node.
func (r *Rabbit) Ctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(rabbitBin, "rabbitmqctl"), append([]string{"-n", r.Name}, args...)...)
	cmd.Env = r.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// URL is the node's AMQP URL (the default guest user, allowed from
// loopback).
func (r *Rabbit) URL() string {
	return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", r.Port)
}

// StartTLSRabbit boots a private node with a TLS listener on 127.0.0.1:tlsPort
// serving certs' server certificate (clients are not asked for one).
func StartTLSRabbit(t testing.TB, name string, port, tlsPort int, certs Certs) *Rabbit {
	t.Helper()
	return StartRabbit(t, RabbitOptions{
		Name: name, Port: port,
		Files: map[string][]byte{"ca.pem": certs.CA, "server.pem": certs.Cert, "server.key": certs.Key},
		Conf: fmt.Sprintf("listeners.ssl.default = 127.0.0.1:%d\n", tlsPort) +
			"ssl_options.cacertfile = {{dir}}/ca.pem\nssl_options.certfile = {{dir}}/server.pem\n" +
			"ssl_options.keyfile = {{dir}}/server.key\nssl_options.verify = verify_none\n" +
			"ssl_options.fail_if_no_peer_cert = false\n",
	})
}
