// Package discard is an optional TCP listener on the capture's listen address
// that accepts connections and discards what they send, so clients'
// connections complete when nothing else listens there (SINK=true).
package discard

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// MaxConns bounds the connections held open at once; more are closed on
// accept.
const MaxConns = 4096

// IdleTimeout closes a connection that sends nothing for this long.
const IdleTimeout = 2 * time.Minute

// Sink accepts and discards.
type Sink struct {
	ln  net.Listener
	log *slog.Logger

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// Listen binds addr.
func Listen(addr string, log *slog.Logger) (*Sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &Sink{ln: ln, log: log, conns: map[net.Conn]struct{}{}}, nil
}

// Addr is the bound address.
func (s *Sink) Addr() net.Addr { return s.ln.Addr() }

// Serve accepts until ctx ends, then closes the listener and every
// connection and waits for their goroutines.
func (s *Sink) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		s.ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	defer stop()
	defer s.wg.Wait()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Warn("sink accept", "err", err)
			time.Sleep(50 * time.Millisecond) // e.g. out of file descriptors
			continue
		}
		s.mu.Lock()
		if len(s.conns) >= MaxConns || ctx.Err() != nil {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.discard(c)
	}
}

func (s *Sink) discard(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	buf := make([]byte, 4096)
	for {
		_ = c.SetReadDeadline(time.Now().Add(IdleTimeout))
		if _, err := c.Read(buf); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("sink read", "err", err)
			}
			return
		}
	}
}
