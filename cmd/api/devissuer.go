package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/imprun/imprun-server/config"
	"github.com/imprun/imprun-server/devissuer"
)

func init() {
	extraCommands = append(extraCommands, devIssuerCmd, tokenCmd)
}

// devIssuerCmd serves the local OIDC issuer that `make run` uses.
func devIssuerCmd(load func() (*config.Config, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "dev-issuer",
		Short: "Serve a local OIDC issuer (discovery + JWKS) for development; `api token` signs its tokens",
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			key, err := devissuer.LoadOrCreateKey(cfg.OIDC.DevIssuerState)
			if err != nil {
				return err
			}
			iss, err := devissuer.Start(cfg.OIDC.DevIssuerAddr, key)
			if err != nil {
				return err
			}
			defer iss.Close()
			if iss.URL() != cfg.OIDC.IssuerURL {
				fmt.Fprintf(c.ErrOrStderr(), "warning: the dev issuer is %s but oidc.issuer_url is %s; the api will refuse its tokens\n", iss.URL(), cfg.OIDC.IssuerURL)
			}
			fmt.Fprintf(c.OutOrStdout(), "dev OIDC issuer at %s (key %s)\n", iss.URL(), cfg.OIDC.DevIssuerState)
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			return nil
		},
	}
}

// tokenCmd prints a bearer token of the dev issuer for a chosen persona.
func tokenCmd(load func() (*config.Config, error)) *cobra.Command {
	var email, subject string
	var roles []string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Print a bearer token from the dev issuer, e.g. token --role operator --email ops@example.com",
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			key, err := devissuer.LoadKey(cfg.OIDC.DevIssuerState)
			if err != nil {
				return err
			}
			var rs []string
			for _, r := range roles {
				for _, p := range strings.Split(r, ",") {
					if p = strings.TrimSpace(p); p != "" {
						rs = append(rs, p)
					}
				}
			}
			tok, err := devissuer.Token(key, cfg.OIDC.IssuerURL, devissuer.Persona{
				Email: email, Subject: subject, Roles: rs, Audience: cfg.OIDC.Audience, TTL: ttl,
				RolesClaim: cfg.OIDC.RolesClaim, EmailClaim: cfg.OIDC.EmailClaim,
			})
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), tok)
			return nil
		},
	}
	cmd.Flags().StringVar(&email, "email", "dev@example.com", "e-mail of the persona")
	cmd.Flags().StringVar(&subject, "subject", "", "subject (default: derived from the e-mail)")
	cmd.Flags().StringSliceVar(&roles, "role", nil, "platform role (operator, admin); repeatable; none for a plain user")
	cmd.Flags().DurationVar(&ttl, "ttl", 8*time.Hour, "token lifetime")
	return cmd
}
