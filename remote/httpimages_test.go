package remote_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/remote/exporter"
)

// The image cache over plain HTTP (curl -T): a PUT whose body matches its
// digest enters the cache (and HEAD then finds it); one that does not is
// refused and leaves the cache as it was; without the token, nothing.
func TestImagesCanBeUploadedWithPlainHTTP(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1, func(c *exporter.Config) { c.Tokens = map[string]string{"http-token-0123456789": "ci"} })
	hc := unixClient(l.url)
	body := bytes.Repeat([]byte("an image over plain http\n"), 100000)
	d := sha256.Sum256(body)
	sum := hex.EncodeToString(d[:])
	do := func(method, path, token string, body []byte) (int, string) {
		req, err := http.NewRequest(method, "http://exporter"+path, bytes.NewReader(body))
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, _ := do(http.MethodPut, "/v1/images/"+sum, "", body)
	assert.Equal(t, http.StatusUnauthorized, code, "no token")
	tampered := append([]byte(nil), body...)
	tampered[100] ^= 1
	code, msg := do(http.MethodPut, "/v1/images/"+sum, "http-token-0123456789", tampered)
	assert.Equal(t, http.StatusBadRequest, code, msg)
	assert.Equal(t, 0, l.cache.Len(), "a refused upload entered the cache")
	code, _ = do(http.MethodHead, "/v1/images/"+sum, "http-token-0123456789", nil)
	assert.Equal(t, http.StatusNotFound, code)

	code, msg = do(http.MethodPut, "/v1/images/"+sum, "http-token-0123456789", body)
	require.Equal(t, http.StatusCreated, code, msg)
	assert.Contains(t, msg, sum)
	code, _ = do(http.MethodHead, "/v1/images/"+sum, "http-token-0123456789", nil)
	assert.Equal(t, http.StatusOK, code)
	code, _ = do(http.MethodPut, "/v1/images/"+sum, "http-token-0123456789", body)
	assert.Equal(t, http.StatusOK, code, "again: already cached")
	code, msg = do(http.MethodPut, "/v1/images/not-a-digest", "http-token-0123456789", body)
	assert.Equal(t, http.StatusBadRequest, code, msg)
}
