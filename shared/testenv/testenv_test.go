package testenv

import (
	"bufio"
	"net"
	"strings"
	"testing"
)

// fakeRedis answers every GET with reply and counts the requests.
func fakeRedis(t *testing.T, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for range 5 { // *2, $3, GET, $N, key
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
				}
				_, _ = c.Write([]byte(reply))
			}()
		}
	}()
	return ln.Addr().String()
}

func TestCheckMarkerRefusesForeignRedis(t *testing.T) {
	const marker = "0123abcd"
	cases := []struct {
		name, reply, wantErr string
	}{
		{"ours", "$8\r\n0123abcd\r\n", ""},
		{"no marker (somebody else's server)", "$-1\r\n", "not a server that testenv.sh started"},
		{"another run's marker", "$8\r\nffffffff\r\n", "another run's marker"},
		{"password protected", "-NOAUTH Authentication required.\r\n", "not a server that testenv.sh started"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := checkMarker(fakeRedis(t, c.reply), marker)
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("checkMarker: %v", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("checkMarker = %v, want an error containing %q", err, c.wantErr)
			}
		})
	}
}

func TestCheckMarkerOnTestServers(t *testing.T) {
	// The servers testenv.sh started carry the marker: Redis passes.
	for _, a := range Redis(t, 3) {
		if err := checkMarker(a, setting(t, "CONNPIPE_TEST_MARKER")); err != nil {
			t.Errorf("%s: %v", a, err)
		}
	}
}
