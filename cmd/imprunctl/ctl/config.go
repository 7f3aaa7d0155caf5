package ctl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// DefaultServer is the API of `make run`.
const DefaultServer = "http://127.0.0.1:8080"

// Config is what `imprunctl login` stores: readable by its owner only, since it holds a token.
type Config struct {
	Server string `yaml:"server"`
	Token  string `yaml:"token"`
	Tenant string `yaml:"tenant,omitempty"`
}

// configPath is --config, else $XDG_CONFIG_HOME/imprunctl/config.yaml (~/.config when unset).
func (a *app) configPath() (string, error) {
	if a.config != "" {
		return a.config, nil
	}
	dir := a.io.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := a.io.Getenv("HOME")
		if home == "" {
			var err error
			if home, err = os.UserHomeDir(); err != nil {
				return "", fmt.Errorf("no config directory: set XDG_CONFIG_HOME or HOME")
			}
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "imprunctl", "config.yaml"), nil
}

func (a *app) loadConfig() (Config, error) {
	var c Config
	p, err := a.configPath()
	if err != nil {
		return c, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("config %s: %w", p, err)
	}
	return c, nil
}

func (a *app) saveConfig(c Config) (string, error) {
	p, err := a.configPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", err
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return "", err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return "", err
	}
	// WriteFile keeps the mode of a file that already exists; make sure it is private.
	if err := os.Chmod(tmp, 0o600); err != nil {
		return "", err
	}
	return p, os.Rename(tmp, p)
}

// settings resolves server, token and tenant: flag, then environment, then the config file.
func (a *app) settings() (Config, error) {
	c, err := a.loadConfig()
	if err != nil {
		return c, err
	}
	pick := func(flag, env, file string) string {
		if flag != "" {
			return flag
		}
		if v := a.io.Getenv(env); v != "" {
			return v
		}
		return file
	}
	c.Server = pick(a.server, "IMPRUN_SERVER", c.Server)
	if c.Server == "" {
		c.Server = DefaultServer
	}
	c.Token = pick(a.token, "IMPRUN_TOKEN", c.Token)
	c.Tenant = pick(a.tenant, "IMPRUN_TENANT", c.Tenant)
	return c, nil
}
