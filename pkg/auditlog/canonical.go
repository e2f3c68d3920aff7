package auditlog

import (
	"bytes"
	"slices"
)

// canonicalPlain is the RFC 8785 form of raw when raw is plain JSON: its
// strings printable ASCII without escapes, its numbers integers of at
// most 15 digits (other than -0), no object with a key twice. Such a
// document's RFC 8785 form is the document itself with keys sorted
// bytewise (UTF-16 order, for ASCII), no whitespace, strings and numbers
// as written (an integer below 2^53 is its own ECMAScript form). Anything
// else, valid or not, is declined (ok false), for jcs.Transform to
// encode or reject: what is not sure to come out the same never takes
// this way.
func canonicalPlain(raw []byte) (_ []byte, ok bool) {
	p := plainParser{in: raw}
	out, ok := p.value(make([]byte, 0, len(raw)), 0)
	if !ok {
		return nil, false
	}
	p.space()
	if p.i != len(p.in) {
		return nil, false
	}
	return out, true
}

// plainDepth bounds the nesting canonicalPlain takes on.
const plainDepth = 64

type plainParser struct {
	in []byte
	i  int
}

func (p *plainParser) space() {
	for p.i < len(p.in) {
		switch p.in[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// value appends the canonical form of the value at p.i to out.
func (p *plainParser) value(out []byte, depth int) ([]byte, bool) {
	p.space()
	if p.i >= len(p.in) || depth > plainDepth {
		return nil, false
	}
	switch c := p.in[p.i]; {
	case c == '{':
		return p.object(out, depth)
	case c == '[':
		return p.array(out, depth)
	case c == '"':
		s, ok := p.str()
		return append(out, s...), ok
	case c == '-' || c >= '0' && c <= '9':
		return p.integer(out)
	default:
		for _, lit := range []string{"true", "false", "null"} {
			if bytes.HasPrefix(p.in[p.i:], []byte(lit)) {
				p.i += len(lit)
				return append(out, lit...), true
			}
		}
		return nil, false
	}
}

// str returns the string at p.i, quotes included, if it is plain.
func (p *plainParser) str() ([]byte, bool) {
	start := p.i
	for p.i++; p.i < len(p.in); p.i++ {
		switch c := p.in[p.i]; {
		case c == '"':
			p.i++
			return p.in[start:p.i], true
		case c < 0x20 || c > 0x7e || c == '\\':
			return nil, false
		}
	}
	return nil, false
}

// integer appends the integer at p.i if it is plain.
func (p *plainParser) integer(out []byte) ([]byte, bool) {
	start := p.i
	if p.in[p.i] == '-' {
		p.i++
	}
	digits := p.i
	for p.i < len(p.in) && p.in[p.i] >= '0' && p.in[p.i] <= '9' {
		p.i++
	}
	n := p.in[digits:p.i]
	switch {
	case len(n) == 0 || len(n) > 15:
		return nil, false
	case n[0] == '0' && (len(n) > 1 || digits > start): // 01, -0
		return nil, false
	}
	if p.i < len(p.in) {
		switch p.in[p.i] {
		case '.', 'e', 'E':
			return nil, false
		}
	}
	return append(out, p.in[start:p.i]...), true
}

func (p *plainParser) array(out []byte, depth int) ([]byte, bool) {
	p.i++ // [
	out = append(out, '[')
	p.space()
	if p.i < len(p.in) && p.in[p.i] == ']' {
		p.i++
		return append(out, ']'), true
	}
	for {
		var ok bool
		if out, ok = p.value(out, depth+1); !ok {
			return nil, false
		}
		p.space()
		if p.i >= len(p.in) {
			return nil, false
		}
		switch p.in[p.i] {
		case ',':
			p.i++
			out = append(out, ',')
		case ']':
			p.i++
			return append(out, ']'), true
		default:
			return nil, false
		}
	}
}

func (p *plainParser) object(out []byte, depth int) ([]byte, bool) {
	p.i++ // {
	type member struct {
		key        []byte // quoted
		start, end int    // of its value in vals
	}
	var (
		members []member
		vals    []byte
	)
	p.space()
	if p.i < len(p.in) && p.in[p.i] == '}' {
		p.i++
		return append(out, '{', '}'), true
	}
	for {
		p.space()
		if p.i >= len(p.in) || p.in[p.i] != '"' {
			return nil, false
		}
		key, ok := p.str()
		if !ok {
			return nil, false
		}
		p.space()
		if p.i >= len(p.in) || p.in[p.i] != ':' {
			return nil, false
		}
		p.i++
		start := len(vals)
		if vals, ok = p.value(vals, depth+1); !ok {
			return nil, false
		}
		members = append(members, member{key: key, start: start, end: len(vals)})
		p.space()
		if p.i >= len(p.in) {
			return nil, false
		}
		if p.in[p.i] == ',' {
			p.i++
			continue
		}
		if p.in[p.i] != '}' {
			return nil, false
		}
		p.i++
		break
	}
	// By the keys without their quotes: "a" comes before "a!".
	slices.SortFunc(members, func(a, b member) int { return bytes.Compare(a.key[1:len(a.key)-1], b.key[1:len(b.key)-1]) })
	out = append(out, '{')
	for i, m := range members {
		if i > 0 {
			if bytes.Equal(m.key, members[i-1].key) {
				return nil, false // a duplicate key: jcs.Transform rejects it
			}
			out = append(out, ',')
		}
		out = append(out, m.key...)
		out = append(out, ':')
		out = append(out, vals[m.start:m.end]...)
	}
	return append(out, '}'), true
}
