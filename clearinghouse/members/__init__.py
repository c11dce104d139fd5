"""Coalition members and the partners' links to them."""
