// Package redact makes addresses and texts fit to show: the password of
// every URL in them replaced by "xxxxx". It is the one place log lines,
// errors and answers go through before anything prints them.
package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// Addr is addr with any password replaced by "xxxxx", fit to show.
// An address that does not parse as a URL loses everything before its
// last '@'.
func Addr(addr string) string {
	if !strings.Contains(addr, "@") {
		return addr
	}
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		return u.Redacted()
	}
	scheme, rest, ok := strings.Cut(addr, "://")
	if !ok {
		rest, scheme = addr, ""
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest = "xxxxx@" + rest[i+1:]
	}
	if scheme != "" {
		return scheme + "://" + rest
	}
	return rest
}

// userinfo matches the user and password of any URL inside a text: a
// scheme, "//", an optional user, ":", the password and "@".
var userinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^\s/@:"'<>]*):[^\s/@"'<>]*@`)

// Text is s with the password of every URL in it replaced by
// "xxxxx": the one place errors, log lines and answers that may quote an
// address (a go-redis or url error, a message built elsewhere) are made
// fit to show. Addresses alone go through Addr.
func Text(s string) string {
	if !strings.Contains(s, "@") || !strings.Contains(s, "://") {
		return s
	}
	return userinfo.ReplaceAllString(s, "${1}:xxxxx@")
}
