package ctl

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/imprun/imprun-server/devissuer"
)

func (a *app) loginCmd() *cobra.Command {
	var dev bool
	var email, issuerURL, keyFile, audience string
	var roles []string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Store the server URL and a bearer token (--token T, or --dev-issuer for a dev token)",
		Long: "Checks the token with GET /v1/me and stores server, token and tenant in the config file (mode 0600).\n" +
			"--dev-issuer signs a token with the key of the local dev OIDC issuer (`make run`), as `api token` does.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			s, err := a.settings()
			if err != nil {
				return err
			}
			if dev {
				key, err := devissuer.LoadKey(keyFile)
				if err != nil {
					return err
				}
				s.Token, err = devissuer.Token(key, issuerURL, devissuer.Persona{Email: email, Roles: roles, Audience: audience, TTL: ttl})
				if err != nil {
					return fmt.Errorf("dev issuer token: %w", err)
				}
			}
			if s.Token == "" {
				return fmt.Errorf("login needs --token T (or IMPRUN_TOKEN) or --dev-issuer")
			}
			cl, err := newAPI(s)
			if err != nil {
				return err
			}
			me, err := cl.GetMeWithResponse(c.Context())
			if err := check("GET /v1/me", me, err); err != nil {
				return err
			}
			p, err := a.saveConfig(s)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.io.Stdout, "logged in to %s as %s (config %s)\n", s.Server, me.JSON200.User.Email, p)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&dev, "dev-issuer", false, "sign a token with the dev issuer's key instead of --token")
	f.StringVar(&email, "email", "dev@example.com", "with --dev-issuer: the persona's e-mail")
	f.StringSliceVar(&roles, "role", nil, "with --dev-issuer: platform role (operator, admin); repeatable")
	f.StringVar(&issuerURL, "issuer-url", "http://127.0.0.1:9998/oidc", "with --dev-issuer: the issuer URL the API trusts (oidc.issuer_url)")
	f.StringVar(&keyFile, "dev-issuer-key", ".data/dev-issuer.json", "with --dev-issuer: the dev issuer's key (oidc.dev_issuer_state)")
	f.StringVar(&audience, "audience", "imprun-server", "with --dev-issuer: the audience the API requires (oidc.audience)")
	f.DurationVar(&ttl, "ttl", 8*time.Hour, "with --dev-issuer: token lifetime")
	return cmd
}

func (a *app) logoutCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Forget the stored token",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			c, err := a.loadConfig()
			if err != nil {
				return err
			}
			c.Token = ""
			_, err = a.saveConfig(c)
			return err
		},
	}
}

func (a *app) whoamiCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "The caller: user, platform roles, tenants (GET /v1/me)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := a.api()
			if err != nil {
				return err
			}
			me, err := cl.GetMeWithResponse(c.Context())
			if err := check("GET /v1/me", me, err); err != nil {
				return err
			}
			m := me.JSON200
			return a.emit(m, func(w io.Writer) error {
				fields(w, "email", m.User.Email, "name", m.User.DisplayName, "platform roles", dash(strings.Join(m.PlatformRoles, ",")))
				t := &table{header: []string{"TENANT", "TYPE", "ROLE", "STATUS"}}
				for _, tm := range m.Tenants {
					t.add(tm.Slug, string(tm.Type), string(tm.Role), string(tm.Status))
				}
				return t.write(w)
			})
		},
	}
}
