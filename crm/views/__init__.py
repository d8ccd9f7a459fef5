"""Server-rendered pages for salespeople and managers; thin: check input, call a selector or service, render."""
