package main

import (
	"context"
	"fmt"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/manage"
)

// initConfig is the configuration of keyward init.
type initConfig struct {
	storeConfig
	Output       string // table or json
	NewRootToken bool   // issue a root token even if one was issued before
	NewSecret    bool   // write under a server secret that made no stored token
}

// defineInitFlags defines the flags of keyward init on fs and returns the
// configuration they fill.
func defineInitFlags(fs *flagSet) *initConfig {
	cfg := &initConfig{}
	defineStoreFlags(fs, &cfg.storeConfig)
	addOutputFlag(fs, &cfg.Output)
	fs.Bool(&cfg.NewRootToken, "new-root-token", "", false, "issue another root token even though one was issued before")
	defineNewSecretFlag(fs, &cfg.NewSecret)
	defineServerSecrets(fs, &cfg.storeConfig)
	return cfg
}

// cmdInit prepares the store and issues the first root management token.
func cmdInit(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "init", help{
		summary: "Create the store if needed (schema and the default workspace) and issue the first\n" +
			"root management token, printed once ({\"token\": \"...\"} with --output json). The root\n" +
			"token holds keyward:admin in the default workspace and keyward:instance. When a root\n" +
			"token was issued before, init fails unless --new-root-token is given.",
		examples: []string{
			"keyward init",
			"keyward init --data-dir /var/lib/keyward --output json",
			"keyward init --new-root-token",
		},
	})
	cfg := defineInitFlags(fs)
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, args); err != nil {
		return err
	}
	keys, err := keyring(cfg.storeConfig)
	if err != nil {
		return err
	}
	store, err := openStore(ctx, cfg.storeConfig, keys)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := checkKeysCLI(ctx, e, store, keys, cfg.NewSecret); err != nil {
		return err
	}
	svc := &manage.Service{Store: store, Keys: keys}
	tok, text, err := svc.CreateRootToken(ctx, cfg.NewRootToken)
	if err != nil {
		return err
	}
	e.addSecret(text)
	if cfg.Output == outputJSON {
		if err := writeJSON(e.stdout, map[string]string{"token": text, "id": tok.ID}); err != nil {
			return lostRootToken(tok.ID, err)
		}
		return nil
	}
	fmt.Fprintf(e.stdout, "Store ready. Root management token %s (keyward:admin in %q, keyward:instance).\n", tok.ID, keyward.DefaultWorkspace)
	fmt.Fprintf(e.stdout, "It is shown only this once; keep it in a secret store:\n")
	if _, err := fmt.Fprintln(e.stdout, text); err != nil {
		return lostRootToken(tok.ID, err)
	}
	return nil
}

// lostRootToken is the error of an init whose root token was issued but
// could not be shown: whoever runs it must know to issue another.
func lostRootToken(id string, err error) error {
	return fmt.Errorf("the root token %s was issued but could not be shown (writing to standard output: %v); nobody holds it: revoke it, and run keyward init --new-root-token for one you can keep", id, err)
}
