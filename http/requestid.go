package http

import (
	"crypto/rand"
	"encoding/hex"

	"github.com/labstack/echo/v4"
)

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func validRequestID(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

func requestID(c echo.Context) string {
	return c.Response().Header().Get(echo.HeaderXRequestID)
}

// requestIDMiddleware keeps a caller's X-Request-ID only when it is short and printable, so
// nobody can forge log lines through it, and otherwise makes one.
func requestIDMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		rid := c.Request().Header.Get(echo.HeaderXRequestID)
		if rid == "" || !validRequestID(rid) {
			rid = newRequestID()
		}
		c.Response().Header().Set(echo.HeaderXRequestID, rid)
		return next(c)
	}
}
