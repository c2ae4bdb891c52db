// The test cluster's pod sandbox ("pause") image: a static binary that sleeps until signalled.
module access-token-operator.local/node/pause

go 1.26.0
