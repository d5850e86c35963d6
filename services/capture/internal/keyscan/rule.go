package keyscan

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"unicode/utf8"
)

// ErrRule reports a rule that is not a regular expression with exactly one
// capture group.
var ErrRule = errors.New("bad key rule")

// ParseRule compiles a key rule: a regular expression (Go RE2 syntax) with
// exactly one capture group.
func ParseRule(s string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRule, err)
	}
	if n := re.NumSubexp(); n != 1 {
		return nil, fmt.Errorf("%w: want exactly one capture group, found %d", ErrRule, n)
	}
	return re, nil
}

// MatchSpan is the most bytes a match of re can span, and false when that
// is unbounded (a *, + or open repeat) or when the rule looks at the byte
// before its match (^, \b, \B), so that a scan must start at the stream's
// start.
func MatchSpan(re *regexp.Regexp) (int, bool) {
	if re == nil {
		return 0, false
	}
	p, err := syntax.Parse(re.String(), syntax.Perl)
	if err != nil {
		return 0, false
	}
	return span(p.Simplify())
}

// spanCap stops the sum before it could overflow; no window is as long.
const spanCap = 1 << 30

func span(re *syntax.Regexp) (int, bool) {
	switch re.Op {
	case syntax.OpNoMatch, syntax.OpEmptyMatch, syntax.OpEndLine, syntax.OpEndText:
		return 0, true
	case syntax.OpBeginLine, syntax.OpBeginText, syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return 0, false
	case syntax.OpLiteral:
		n := 0
		for _, r := range re.Rune {
			if re.Flags&syntax.FoldCase != 0 {
				n += utf8.UTFMax // a folded form may be longer
			} else {
				n += utf8.RuneLen(r)
			}
		}
		return n, true
	case syntax.OpCharClass:
		if len(re.Rune) == 0 {
			return 0, true
		}
		if r := utf8.RuneLen(re.Rune[len(re.Rune)-1]); r > 0 {
			return r, true
		}
		return utf8.UTFMax, true
	case syntax.OpAnyCharNotNL, syntax.OpAnyChar:
		return utf8.UTFMax, true
	case syntax.OpCapture, syntax.OpQuest:
		return span(re.Sub[0])
	case syntax.OpStar, syntax.OpPlus:
		return 0, false
	case syntax.OpRepeat:
		if re.Max < 0 {
			return 0, false
		}
		n, ok := span(re.Sub[0])
		return min(n*re.Max, spanCap), ok && n*re.Max < spanCap
	case syntax.OpConcat, syntax.OpAlternate:
		total := 0
		for _, sub := range re.Sub {
			n, ok := span(sub)
			if !ok {
				return 0, false
			}
			if re.Op == syntax.OpConcat {
				total = min(total+n, spanCap)
			} else {
				total = max(total, n)
			}
		}
		return total, total < spanCap
	}
	return 0, false
}
