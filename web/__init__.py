"""cryoplan browser viewer (trame). Research and education only; not for clinical use."""
