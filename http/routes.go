package http

import "github.com/labstack/echo/v4"

// collection is the five handlers of a REST collection at path and its items at path/:id.
type collection struct{ list, create, get, update, delete echo.HandlerFunc }

// register adds the collection: read (viewers, say) may list and get, write may change. It
// returns the routes that change something.
func (h collection) register(g *echo.Group, path string, read, write echo.MiddlewareFunc) []*echo.Route {
	g.GET(path, h.list, read)
	g.GET(path+"/:id", h.get, read)
	return []*echo.Route{
		g.POST(path, h.create, write),
		g.PATCH(path+"/:id", h.update, write),
		g.DELETE(path+"/:id", h.delete, write),
	}
}
