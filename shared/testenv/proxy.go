package testenv

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a TCP proxy on loopback in front of a test server, which a test
// can cut (close every connection and refuse new ones) and restore, to
// play a lost node or a broken network without touching the server.
type Proxy struct {
	Addr   string // where clients connect: 127.0.0.1:port
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	mute  atomic.Bool // drop what the server sends
}

// Mute drops everything the server sends from now on, while what clients
// send still arrives: a broker that takes publishes but whose confirms
// are lost.
func (p *Proxy) Mute() { p.mute.Store(true) }

// discardWhile writes to w unless muted says to drop.
type discardWhile struct {
	w     io.Writer
	muted *atomic.Bool
}

func (d discardWhile) Write(b []byte) (int, error) {
	if d.muted.Load() {
		return len(b), nil
	}
	return d.w.Write(b)
}

// NewProxy starts a proxy to target (host:port) on a free loopback port;
// it stops when the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	return NewProxyAt(t, "127.0.0.1:0", target)
}

// NewProxyAt starts a proxy to target on addr, for a test whose clients
// must find it at a known address.
func NewProxyAt(t testing.TB, addr, target string) *Proxy {
	t.Helper()
	p := &Proxy{Addr: addr, target: target, conns: map[net.Conn]struct{}{}}
	p.listen(t)
	t.Cleanup(p.Cut)
	return p
}

// listen opens p.Addr, retrying a while: a port just closed may linger.
func (p *Proxy) listen(t testing.TB) {
	t.Helper()
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", p.Addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("proxy: listen on %s: %v", p.Addr, err)
	}
	p.Addr = ln.Addr().String()
	p.serve(ln)
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.pipe(c)
		}
	}()
}

func (p *Proxy) pipe(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil { // cut meanwhile
		p.mu.Unlock()
		c.Close()
		s.Close()
		return
	}
	p.conns[c], p.conns[s] = struct{}{}, struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = io.Copy(s, c); s.Close() })
	wg.Go(func() { _, _ = io.Copy(discardWhile{c, &p.mute}, s); c.Close() })
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, s)
	p.mu.Unlock()
}

// Cut closes every proxied connection and stops accepting: the node is gone.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Restore accepts again on the same address, unmuted.
func (p *Proxy) Restore(t testing.TB) {
	t.Helper()
	p.mute.Store(false)
	p.listen(t)
}

// Conns is the number of client connections open through the proxy.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns) / 2
}
