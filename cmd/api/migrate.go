package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/imprun/imprun-server/config"
	"github.com/imprun/imprun-server/migrations"
	"github.com/imprun/imprun-server/store"
)

// loadConfig loads the API's configuration (once a command runs).
type loadConfig func() (*config.Config, error)

// migration is the body of a migrate subcommand, given the migrator and the open database.
type migration func(ctx context.Context, m *migrations.Migrator, db *sql.DB, c *cobra.Command) error

func migrateCmd(load func() (*config.Config, error)) *cobra.Command {
	cmd := &cobra.Command{Use: "migrate", Short: "Manage the database schema"}
	l := loadConfig(load)
	cmd.AddCommand(migrateUpCmd(l), migrateDownCmd(l), migrateStatusCmd(l), migrateRemapCmd(l))
	return cmd
}

// withMigrator runs a migration with the configured database, until SIGINT or SIGTERM.
func (load loadConfig) withMigrator(run migration) func(*cobra.Command, []string) error {
	return func(c *cobra.Command, _ []string) error {
		cfg, err := load()
		if err != nil {
			return err
		}
		log := cfg.NewLogger(os.Stderr)
		ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		db, err := store.OpenSQL(ctx, cfg.Database.URL, cfg.Database.ConnectRetry, log)
		if err != nil {
			return err
		}
		defer db.Close()
		m, err := migrations.New(db)
		if err != nil {
			return err
		}
		return run(ctx, m, db, c)
	}
}

func migrateUpCmd(load loadConfig) *cobra.Command {
	var upTo int64
	up := &cobra.Command{Use: "up", Short: "Apply pending migrations (all, or up to --to N)",
		RunE: load.withMigrator(func(ctx context.Context, m *migrations.Migrator, _ *sql.DB, c *cobra.Command) error {
			res, err := m.Up(ctx, upTo)
			for _, r := range res {
				fmt.Fprintf(c.OutOrStdout(), "applied %05d %s (%s)\n", r.Source.Version, r.Source.Path, r.Duration.Round(time.Millisecond))
			}
			if err != nil {
				return fmt.Errorf("migrate up: %w", err)
			}
			v, _ := m.Version(ctx)
			fmt.Fprintf(c.OutOrStdout(), "schema at version %d\n", v)
			return nil
		})}
	up.Flags().Int64Var(&upTo, "to", 0, "stop at this version")
	return up
}

func migrateDownCmd(load loadConfig) *cobra.Command {
	var downTo int64
	down := &cobra.Command{Use: "down", Short: "Roll back the newest migration (or down to --to N)",
		RunE: load.withMigrator(func(ctx context.Context, m *migrations.Migrator, _ *sql.DB, c *cobra.Command) error {
			if c.Flags().Changed("to") {
				res, err := m.DownTo(ctx, downTo)
				for _, r := range res {
					fmt.Fprintf(c.OutOrStdout(), "rolled back %05d %s\n", r.Source.Version, r.Source.Path)
				}
				return err
			}
			r, err := m.Down(ctx)
			if err != nil {
				return fmt.Errorf("migrate down: %w", err)
			}
			fmt.Fprintf(c.OutOrStdout(), "rolled back %05d %s\n", r.Source.Version, r.Source.Path)
			return nil
		})}
	down.Flags().Int64Var(&downTo, "to", 0, "roll back to this version (0 = everything)")
	return down
}

func migrateStatusCmd(load loadConfig) *cobra.Command {
	status := &cobra.Command{Use: "status", Short: "List migrations and whether they are applied",
		RunE: load.withMigrator(func(ctx context.Context, m *migrations.Migrator, _ *sql.DB, c *cobra.Command) error {
			st, err := m.Status(ctx)
			if err != nil {
				return err
			}
			for _, s := range st {
				when := "pending"
				if !s.AppliedAt.IsZero() {
					when = "applied " + s.AppliedAt.Format(time.RFC3339)
				}
				fmt.Fprintf(c.OutOrStdout(), "%05d %-40s %s\n", s.Source.Version, s.Source.Path, when)
			}
			return nil
		})}
	return status
}

func migrateRemapCmd(load loadConfig) *cobra.Command {
	var gatewayID, clusterID string
	remap := &cobra.Command{Use: "remap-legacy", Short: "Move one gateway's legacy publishes from the `default` cluster to a real one",
		RunE: load.withMigrator(func(ctx context.Context, _ *migrations.Migrator, db *sql.DB, c *cobra.Command) error {
			n, err := migrations.RemapLegacy(ctx, db, gatewayID, clusterID)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "moved %d publishes of gateway %s to cluster %s\n", n, gatewayID, clusterID)
			return nil
		})}
	remap.Flags().StringVar(&gatewayID, "gateway", "", "gateway (template) id whose legacy publishes move")
	remap.Flags().StringVar(&clusterID, "cluster", "", "target cluster id")
	_ = remap.MarkFlagRequired("gateway")
	_ = remap.MarkFlagRequired("cluster")
	return remap
}
