package logging_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/connpipe/connpipe/shared/logging"
)

// TestLogsHidePasswords: a password quoted by a message, a string value,
// an error or a group never reaches the output, in either format.
func TestLogsHidePasswords(t *testing.T) {
	const secret = "log-Pa55-9f1"
	addr := "redis://secuser:" + secret + "@127.0.0.1:6395/0"
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		log, err := logging.New(&buf, "debug", format)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("dial "+addr, "addr", addr, "err", fmt.Errorf("mget: %w", errors.New(addr+": refused")))
		log.With("backend", addr).WithGroup("g").Warn("x", "url", "amqp://u:"+secret+"@h:5672/")
		out := buf.String()
		if strings.Contains(out, secret) {
			t.Errorf("%s: the password is in the log:\n%s", format, out)
		}
		if n := strings.Count(out, "secuser:xxxxx@127.0.0.1:6395"); n < 4 {
			t.Errorf("%s: %d redacted addresses, want 4 or more:\n%s", format, n, out)
		}
	}
}
