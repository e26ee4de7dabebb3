"""Pure building blocks of cross-modal fine-tuning (torch, POT, numpy; no orchestration)."""
