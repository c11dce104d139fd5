"""People who use the clearing house: finance staff, approvers, auditors, operators."""
