package driver

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrBadTags is returned (wrapped) by [ParseTags] for a malformed tag list.
var ErrBadTags = errors.New("malformed tag list")

// ParseTags parses a comma-separated tag list such as "arm64, orin".
// Whitespace around tags is ignored; an empty string is no tags. An empty
// tag ("a,,b", "a,"), or a tag holding whitespace or characters other than
// letters, digits and "-_.:/=+" is an error wrapping [ErrBadTags].
func ParseTags(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	tags := make([]string, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, fmt.Errorf("%w %q: tag %d is empty; write tags as a comma-separated list like \"arm64,orin\"", ErrBadTags, s, i+1)
		}
		for _, r := range p {
			if !validTagRune(r) {
				return nil, fmt.Errorf("%w %q: tag %q holds %q; tags are letters, digits and -_.:/=+, separated by commas", ErrBadTags, s, p, r)
			}
		}
		tags = append(tags, p)
	}
	return tags, nil
}

func validTagRune(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return strings.ContainsRune("-_.:/=+", r)
}

// HasTags reports whether dev carries every tag in want, compared
// case-insensitively. No tags match every device.
func HasTags(dev Info, want []string) bool {
	have := dev.Tags
	for _, w := range want {
		if !slices.ContainsFunc(have, func(h string) bool { return strings.EqualFold(h, w) }) {
			return false
		}
	}
	return true
}

// ErrNoDevice is returned (wrapped) by [Select] when no device matches.
var ErrNoDevice = errors.New("no matching device")

// Matches reports whether dev matches name and carries all of tags: a name
// matches a device's name or its serial, exactly; an empty name matches all.
func Matches(dev Info, name string, tags []string) bool {
	if name != "" && dev.Name != name && (dev.Serial == "" || dev.Serial != name) {
		return false
	}
	return HasTags(dev, tags)
}

// Select returns the usable devices that match name and carry all of tags
// (see [Matches]). When nothing matches, the error wraps [ErrNoDevice] and
// lists the devices that were found, and why a matching one cannot be used,
// so the user sees what to select instead.
func Select(devs []Info, name string, tags []string) ([]Info, error) {
	var out []Info
	var unusable []string
	for _, d := range devs {
		if !Matches(d, name, tags) {
			continue
		}
		if d.Unusable {
			unusable = append(unusable, d.String()+": "+strings.Join(d.Problems, "; "))
			continue
		}
		out = append(out, d)
	}
	if len(out) > 0 {
		return out, nil
	}
	var want []string
	if name != "" {
		want = append(want, fmt.Sprintf("name %q", name))
	}
	if len(tags) > 0 {
		want = append(want, fmt.Sprintf("tags %q", strings.Join(tags, ",")))
	}
	if len(want) == 0 {
		want = append(want, "any device")
	}
	if len(devs) == 0 {
		return nil, fmt.Errorf("%w: wanted %s, but the driver found no devices at all; check that the board is connected and powered", ErrNoDevice, strings.Join(want, " and "))
	}
	if len(unusable) > 0 {
		return nil, fmt.Errorf("%w: wanted %s; found it, but it cannot be used now: %s", ErrNoDevice, strings.Join(want, " and "), strings.Join(unusable, "; "))
	}
	var found, broken []string
	for _, d := range devs {
		if d.Unusable {
			broken = append(broken, d.Driver+" "+strings.Join(d.Problems, "; "))
		} else {
			found = append(found, d.String())
		}
	}
	msg := fmt.Sprintf("wanted %s; found %s", strings.Join(want, " and "), strings.Join(found, "; "))
	if len(found) == 0 {
		msg = fmt.Sprintf("wanted %s; found no usable device", strings.Join(want, " and "))
	}
	if len(broken) > 0 {
		msg += "; found but not usable now: " + strings.Join(broken, "; ")
	}
	return nil, fmt.Errorf("%w: %s", ErrNoDevice, msg)
}
