package agent

// SeedPulled is seedPulled, for the agent_test package.
var SeedPulled = (*Agent).seedPulled
