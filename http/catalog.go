package httpapi

import "github.com/labstack/echo/v4"

// registerCatalog adds the provider's logical layer: API services with routes, backends and
// policies, gateway templates, products and plans.
func (a *API) registerCatalog(g *echo.Group) {}
