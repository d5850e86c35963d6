// Package redisconntest starts private redis-server processes with
// passwords, ACL users or TLS (certificates made by the test), on the
// ports 6420..6449, for tests of redisconn's users. They never touch the
// shared test servers.
package redisconntest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connpipe/connpipe/shared/testenv"
)

// Ports of the servers Start starts.
const PortLo, PortHi = 6420, 6449

// Start starts a redis-server whose configuration file holds lines,
// on a free port of 6420..6449 from PortLo+slot on (TLS only when lines
// configure it: then the plain port is closed), and stops it when the test
// ends. A port taken meanwhile by another test process is skipped.
func Start(t testing.TB, dir, name string, slot int, lines ...string) int {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found: %v (install the redis-server package)", err)
	}
	tls := strings.Contains(strings.Join(lines, "\n"), "tls-cert-file")
	for port := PortLo + slot; port <= PortHi; port++ {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		ln.Close()
		conf := []string{"bind 127.0.0.1", "protected-mode yes", "save \"\"", "appendonly no", "loglevel notice",
			"dir " + dir, "dbfilename " + name + ".rdb"}
		if tls {
			conf = append(conf, "port 0", "tls-port "+strconv.Itoa(port))
		} else {
			conf = append(conf, "port "+strconv.Itoa(port))
		}
		file := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(file, []byte(strings.Join(append(conf, lines...), "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(path, file)
		var out testenv.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		})
		// Ready once this process says so (a dial could reach another
		// test's server that took the port first).
		deadline := time.Now().Add(10 * time.Second)
	wait:
		for {
			select {
			case <-exited:
				if strings.Contains(out.String(), "in use") {
					break wait // the port was taken meanwhile: try the next
				}
				t.Fatalf("redis-server %s on %d exited: %s", name, port, out.String())
			case <-time.After(20 * time.Millisecond):
			}
			if strings.Contains(out.String(), "Ready to accept connections") {
				return port
			}
			if time.Now().After(deadline) {
				t.Fatalf("redis-server %s on %d is not ready: %s", name, port, out.String())
			}
		}
	}
	t.Fatalf("no free port in %d..%d for redis-server %s", PortLo, PortHi, name)
	return 0
}

// WriteTLS writes a CA (ca.pem) and a server certificate for localhost and
// 127.0.0.1 signed by it (server.pem, server.key) to dir; it returns the
// CA file.
func WriteTLS(t testing.TB, dir string) string {
	t.Helper()
	return testenv.NewCerts(t).Write(t, dir)
}
