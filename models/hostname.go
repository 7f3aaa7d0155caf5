package models

import "regexp"

// HostnameRe matches a lower-case DNS name: what a publish serves and a tenant domain is.
var HostnameRe = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
