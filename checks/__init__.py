"""Check types: each module holds one check class and its config model beside it."""
