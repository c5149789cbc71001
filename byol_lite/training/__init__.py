"""What every training run shares, whatever it trains: run folders, the step skeleton, processes, the guard."""
