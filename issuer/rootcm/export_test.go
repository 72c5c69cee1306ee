package rootcm

// OwnRootsPEM exposes ownRootsPEM to the external tests.
var OwnRootsPEM = ownRootsPEM
