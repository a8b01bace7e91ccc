package exporter

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/connect"
)

type userKey struct{}

// userOf is who the request's caller was authenticated as: its token's
// name, its client certificate's subject, or "" (a caller on a unix
// socket of an exporter with no tokens).
func userOf(ctx context.Context) string {
	u, _ := ctx.Value(userKey{}).(string)
	return u
}

// Authenticate wraps next so that every request but GET /healthz proves who
// it is: a client certificate the TLS listener verified (user: its
// subject's common name), or the bearer token of one of [Config.Tokens] in
// the Authorization header (user: the token's name). With no tokens
// configured, a request without either is let through (the unix socket's
// file permissions, or a listener's client CA, are then the guard: [Listen]
// refuses a TCP listener with neither). A refusal is a connect
// Unauthenticated error that says what to set.
func (e *Exporter) Authenticate(next http.Handler) http.Handler {
	ew := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		user, err := e.authenticate(r)
		if err != nil {
			e.log.Warn("request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "err", err)
			ce := connect.NewError(connect.CodeUnauthenticated, err)
			if ew.IsSupported(r) {
				_ = ew.Write(w, r, ce)
				return
			}
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, user)))
	})
}

// errUnauthenticated is wrapped by every refusal of a caller.
var errUnauthenticated = errors.New("unauthenticated")

func (e *Exporter) authenticate(r *http.Request) (string, error) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			return "cert:" + r.TLS.VerifiedChains[0][0].Subject.CommonName, nil
		}
		if len(e.cfg.Tokens) == 0 {
			return "", nil
		}
		return "", fmt.Errorf("%w: exporter %s needs a client token: set DUT_EXPORTER_TOKEN (or the remote driver's Token option), or use a client certificate its CA signed", errUnauthenticated, e.cfg.Name)
	}
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok {
		return "", fmt.Errorf("%w: the Authorization header of a request to exporter %s must be \"Bearer <token>\"", errUnauthenticated, e.cfg.Name)
	}
	user := ""
	for known, name := range e.cfg.Tokens {
		if subtle.ConstantTimeCompare([]byte(known), []byte(tok)) == 1 {
			user = name
		}
	}
	if user == "" {
		return "", fmt.Errorf("%w: exporter %s does not know this client token: check DUT_EXPORTER_TOKEN against the exporter's token file", errUnauthenticated, e.cfg.Name)
	}
	return user, nil
}
